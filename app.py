"""Entry point: `app` for gunicorn (`gunicorn app:app`); `python app.py` for the embedded server.

`python app.py` applies pending migrations first, then serves on HOST:PORT.
"""

from __future__ import annotations

from flask_migrate import upgrade

from deploy_service import create_app

app = create_app()


def main() -> None:
    """Apply migrations, then run the embedded server."""
    with app.app_context():
        upgrade()
    app.run(host=app.config["HOST"], port=app.config["PORT"], debug=app.config["DEBUG"], use_reloader=False)


if __name__ == "__main__":
    main()
