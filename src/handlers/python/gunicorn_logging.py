"""Gunicorn's logging configs, applied as Gunicorn applies them: a dict
(logconfig_dict, or logconfig_json's file) merged key by key over
Gunicorn's defaults, then given to dictConfig. Shared by the config file's
reader (the dict) and the app loader (the JSON file)."""
import json
import logging.config

# What Gunicorn configures before it merges a logging dict over it, key
# by key (so a dict that names the "console" handler or the "generic"
# formatter without defining them works as under Gunicorn).
DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": True},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]"},
    },
}


def apply_logconfig_dict(value, what="logconfig_dict"):
    """The app's own loggers (logging.getLogger("myapp")) write where the
    dict says, as under Gunicorn; oxgate's lines and the access lines are
    oxgate's. Returns the error, if the dict is refused."""
    if not value:
        return None
    config = dict(DEFAULTS)
    config.update(value)
    try:
        logging.config.dictConfig(config)
    except (AttributeError, ImportError, ValueError, TypeError) as e:
        return "%s: %s" % (what, e)
    return None


def apply_logconfig_json(path):
    """logconfig_json: the file's dict, applied as logconfig_dict is."""
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        return "logconfig_json: %s" % e
    if not isinstance(value, dict):
        return "logconfig_json: the file holds a JSON %s, not an object" % type(value).__name__
    return apply_logconfig_dict(value, "logconfig_json")
