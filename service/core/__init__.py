"""Cross-cutting pieces of the service: settings, errors, security checks, metrics."""
