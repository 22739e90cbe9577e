__version__ = "0.1.0"
API_VERSION = "v1"
