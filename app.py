"""Entry point: `app` for gunicorn (`gunicorn app:app`); `python app.py` for the embedded server.

`python app.py` applies pending migrations, starts the reconciler in a thread, then serves on HOST:PORT.
With gunicorn, run the reconciler as its own process: `flask --app app reconcile`.
"""

from __future__ import annotations

from flask_migrate import upgrade

from deploy_service import create_app
from deploy_service.reconciler import Reconciler

app = create_app()


def main() -> None:
    """Apply migrations, start the embedded reconciler, then run the embedded server."""
    with app.app_context():
        upgrade()
    if app.config["RECONCILER_ENABLED"]:
        Reconciler(app).start()
    app.run(host=app.config["HOST"], port=app.config["PORT"], debug=app.config["DEBUG"], use_reloader=False)


if __name__ == "__main__":
    main()
