"""doesitwork: a living evidence base for IMS, dry needling and prolotherapy."""

from pathlib import Path

__version__ = "0.1.0"


def shared_dir(name: str) -> Path:
    """``db`` or ``notebooks``: the Datasette files and the report notebooks.

    They live at the top of the repository (the project's layout), which a checkout or an
    editable install uses; a regular install carries a copy inside the package
    (pyproject.toml maps them in), which is looked for first.
    """
    here = Path(__file__).resolve().parent
    installed = here / name
    return installed if installed.is_dir() else here.parent / name
