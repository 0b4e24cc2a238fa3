"""marshmallow schemas, one module per resource: the one validation layer of the service."""
