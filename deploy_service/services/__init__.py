"""Use cases, one module per resource. A service call is one transaction: it owns the commit."""
