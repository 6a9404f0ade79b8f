"""Test settings: two host devices (so sharding is exercised on any CPU), float64 on, and most of
XLA's optimisations off: the suite compiles many small programs, and without them it passes
whole in about 20% less time (docs/results/suite_timing_disable_most_optimizations.json)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")
# read when JAX is imported; subprocesses of the tests (notebooks, the CLI) inherit it
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _fresh_compiled_programs():
    """Drops JAX's compiled programs after each test module. One pytest process compiles a
    few thousand programs over the suite; holding them all grew the process past 5 GB, and a
    whole-suite run once crashed inside XLA's compiler near its end (a test that passes on
    its own). Programs are still shared within a module, where tests reuse them."""
    yield
    jax.clear_caches()


# The longest checks of the default suite, moved out so that it runs in about five minutes on
# two cores (docs/results/suite_timing.json); each still runs with `pytest -m slow`, which
# .ci/run runs after the default suite. Durations from a quiet `pytest -n 2 --durations=0`.
MOVED_TO_SLOW = {
    "test_experiments.py::test_central_flow_quick_smoke",
    "test_experiments.py::test_beyond_spiral_quick_smoke",
    "test_experiments.py::test_resume_loads_finished_sweeps_and_continues_an_interrupted_one",
    "test_experiments.py::test_fig3_quick_smoke",
    "test_experiments.py::test_fig4_quick_smoke",
    "test_experiments.py::test_fig4_one_program_per_family_equals_one_per_eta",
    "test_gpu_check.py::test_tiny_check_runs_every_part",
    "test_central_flow_anchor.py::test_central_flow_anchor_quick_smoke",
    "test_central_flow.py::test_planted_solutions_all_k_in_one_call",
    "test_central_flow.py::test_masked_equals_unmasked_smaller_problem",
    "test_flows_rmsprop.py::test_rmsprop_reaches_its_edge_and_the_central_flow_predicts_its_average",
    "test_flows_rmsprop.py::test_central_flow_with_moving_preconditioner_converges_at_fourth_order",
    "test_flows.py::test_two_critical_directions_each_follow_their_own_closed_form",
    "test_flows.py::test_central_flow_converges_at_fourth_order",
    "test_onset.py::test_per_run_step_limits_equal_runs_of_their_own_length",
    "test_onset.py::test_where_the_onset_falls_against_the_first_lambda1_above_2_over_eta",
    "test_onset.py::test_stop_at_onset_gives_the_same_onsets_as_the_full_run_and_tracking_agrees",
    "test_notebooks.py::test_notebook_runs_in_smoke_mode[01_dynamical_losses]",
    "test_notebooks.py::test_notebook_runs_in_smoke_mode[02_edge_of_stability]",
    "test_notebooks.py::test_notebook_runs_in_smoke_mode[03_sweeps]",
    "test_notebooks.py::test_notebook_runs_in_smoke_mode[04_spectrum]",
    "test_task.py::test_a_task_sweep_resumes_bit_identically",
    "test_task.py::test_top_k_and_step_limits_of_a_task_equal_the_builtin_run",
    "test_reliability.py::test_resume_after_a_signal_is_bit_identical[term]",
    "test_reliability.py::test_shortened_pieces_change_no_number[float32]",
    "test_padding.py::test_float32_padded_equals_unpadded",
    "test_padding.py::test_pad_widths_makes_ce_dce_over_three_widths_one_program",
    "test_optimizers.py::test_optimizer_state_and_spectrum_records_resume_bit_identically",
    "test_optimizers.py::test_density_with_batched_runs_on_two_cpu_devices_finishes",
    "test_optimizers.py::test_train_on_wine_with_momentum_and_a_random_class_order_from_the_command_line",
    "test_optimizers.py::test_in_run_density_is_the_dense_spectrum",
    "test_top_k.py::test_a_padded_program_tracks_the_same_top_k",
    "test_shards.py::test_interrupted_shard_resumes_bit_identically",
    "test_class_tracking.py::test_in_run_gauss_newton_and_ntk_equal_dense_jacobians",
    "test_class_tracking.py::test_in_run_class_split_and_records_equal_dense_per_class_hessians[dmse1-mse-0.2]",
    "test_engine.py::test_a_waveform_set_in_the_config_reaches_gamma_in_the_run",
    "test_eig.py::test_engine_warm_start_equals_long_cold_lanczos_across_class_switches",
    "test_benchmarks.py::test_both_baselines_compute_the_engines_losses_on_the_same_seed",
    "test_curvature.py::test_ggn_and_ntk_against_dense_jacobians[dce-float32]",
    # every user of a costly module fixture, so that the fixture is not built by default
    "test_gpu_check.py::test_tiny_check_throughput_keys",
    "test_gpu_check.py::test_tiny_check_reproduces_the_stored_reference",
    "test_gpu_check.py::test_tiny_check_experiments_and_f32_study",
    "test_central_flow.py::test_agrees_with_cvxpy_within_its_accuracy",
    "test_reliability.py::test_load_run_reads_a_folder_while_its_sweep_runs",
    "test_reliability.py::test_status_and_plot_of_an_unfinished_folder",
    "test_reliability.py::test_a_signal_stops_the_run_with_a_checkpoint_and_one_line[term]",
    "test_landscape.py::test_fig2_smoke_writes_a_consistent_folder",
    "test_instability.py::test_online_detector_in_the_engine_equals_first_instability_of_the_recorded_loss",
    "test_experiments.py::test_fig3b_run_length_smoke",
    "test_reliability.py::test_a_signal_stops_the_run_with_a_checkpoint_and_one_line[int]",
    "test_reliability.py::test_resume_after_a_signal_is_bit_identical[int]",
    "test_reliability.py::test_killed_sweep_resumes_bit_identically",
    "test_shards.py::test_failed_shard_leaves_the_others_intact_and_status_names_it",
    "test_notebooks.py::test_notebook_runs_in_smoke_mode[05_your_own_loss]",
    # the default suite had grown to 317 s with the checks of the spectrum, flows and Fig. 4 work
    "test_task.py::test_a_flax_model_of_two_widths_tracks_the_dense_hessians_eigenvalues",
    "test_class_tracking.py::test_in_run_class_split_and_records_equal_dense_per_class_hessians[dce-ce-1.0]",
    "test_task.py::test_the_cli_takes_import_paths_and_rerun_reports_a_changed_source",
    "test_loop.py::test_the_central_and_stable_flows_run_on_a_task_of_ones_own",
    "test_task.py::test_onset_rules_lambda_at_the_onset_and_stop_at_onset_work_for_a_task",
}


@pytest.hookimpl(tryfirst=True)  # before -m 'not slow' deselects
def pytest_collection_modifyitems(config, items):
    found = set()
    for item in items:
        name = item.nodeid.split("/")[-1]
        if name in MOVED_TO_SLOW:
            item.add_marker(pytest.mark.slow)
            found.add(name)
    # in a whole-suite collection every name must be found (a renamed test would quietly move
    # back into the default suite otherwise)
    modules = {item.nodeid.split("::")[0].split("/")[-1] for item in items}
    wanted = {name.split("::")[0] for name in MOVED_TO_SLOW}
    if wanted <= modules and found != MOVED_TO_SLOW:
        missing = sorted(MOVED_TO_SLOW - found)
        raise pytest.UsageError(f"MOVED_TO_SLOW names tests that do not exist: {missing}")
