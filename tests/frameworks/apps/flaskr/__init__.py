"""A Flask app in the layout of Flask's tutorial: an application factory and blueprints.

Configured as Flask documents it, from ``FLASK_*`` environment variables
(``FLASK_DATA_DIR``: the files it sends and keeps; ``FLASK_SIGNAL_DIR``: where
the streaming view waits for its go-ahead).
"""

from flask import Flask


def create_app(test_config=None):
    app = Flask(__name__)
    app.config.from_mapping(SECRET_KEY="dev", DATA_DIR="/nonexistent", SIGNAL_DIR="/nonexistent")
    if test_config is None:
        app.config.from_prefixed_env()
    else:
        app.config.from_mapping(test_config)

    from . import auth, files

    app.register_blueprint(auth.bp)
    app.register_blueprint(files.bp)
    app.add_url_rule("/", endpoint="index", view_func=auth.index)
    return app
