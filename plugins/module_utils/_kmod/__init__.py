# SPDX-License-Identifier: GPL-3.0-or-later
# This is a private engine package of the kernel.kmod collection: its API may change at any
# time without notice. It never imports AnsibleModule, so it can be unit-tested and reused.
