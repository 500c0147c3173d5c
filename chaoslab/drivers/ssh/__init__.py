"""The ``ssh`` driver: chaoslab's process, stress and network faults on hosts over SSH.

Importing this package never imports paramiko; it is imported when an operation runs.
The driver is registered as ``ssh = chaoslab.drivers.ssh.driver:SSHDriver``.
"""
