"""wippy.kernel: the Jupyter kernel hosting the runtime (built in the kernel issue)."""
