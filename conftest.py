"""Workspace-wide pytest set-up: the `stack` fixture starts the real components."""

pytest_plugins = ["social_stack.pytest_plugin"]
