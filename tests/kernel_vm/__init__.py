"""The job that runs inside the kernel VM (see tests/beds/qemu.py and tests/test_kernel_vm.py).

Imported as ``kernel_vm`` inside the VM (the job root is /job) and as
``tests.kernel_vm`` on the host, where only :mod:`.cases` is used.
"""
