"""doesitwork: a living evidence base for IMS, dry needling and prolotherapy."""

__version__ = "0.1.0"
