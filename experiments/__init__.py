"""One module per figure of Lavin & Ruiz-García 2024; run with ``python -m experiments.<name>``."""
