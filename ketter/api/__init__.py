"""The HTTP API (``ketter api``): one more entry point over the services the
CLI uses. :func:`ketter.api.app.build_app` builds the application; every
operation is authorised by :func:`ketter.api.guard.authorize`."""
