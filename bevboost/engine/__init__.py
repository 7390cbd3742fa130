"""MMEngine integration: optimizer wrappers, hooks and checkpoint safety."""
