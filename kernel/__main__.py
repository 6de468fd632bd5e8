"""``python -m wippy.kernel [--lua] -f CONNECTION_FILE`` runs a kernel; ``... install`` installs the specs."""

import sys

if sys.argv[1:2] == ["install"]:
    from wippy.kernel.install import main

    sys.exit(main(sys.argv[2:]))
else:
    from ipykernel.kernelapp import IPKernelApp
    from wippy.kernel.kernel import WippyKernel, WippyLuaKernel

    kernel_class = WippyLuaKernel if "--lua" in sys.argv[1:] else WippyKernel
    IPKernelApp.launch_instance(argv=[a for a in sys.argv[1:] if a != "--lua"], kernel_class=kernel_class)
