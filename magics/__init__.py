"""wippy.magics: IPython magics for the runtime (built in the kernel issue)."""
