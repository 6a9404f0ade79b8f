"""Build hook of the documentation site: adds the jupytext notebooks of ``notebooks/`` (kept
outside ``docs/`` so that they also run as scripts from the repository root) to the site's files
as ``notebooks/NAME.py``, before mkdocs-jupyter turns them into pages."""

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File


@event_priority(100)  # before the plugins' on_files (mkdocs-jupyter's wraps the notebooks)
def on_files(files, config):
    root = Path(config["config_file_path"]).parent
    for path in sorted((root / "notebooks").glob("*.py")):
        uri = f"notebooks/{path.name}"
        if files.get_file_from_path(uri) is None:
            # a file whose source folder is the repository root (not a generated file: the
            # notebook plugin's wrapper finds the source through src_dir)
            files.append(File(uri, str(root), config["site_dir"], config["use_directory_urls"]))
    return files
