# SPDX-License-Identifier: Apache-2.0
# stowbridge %preun (RPM): what %systemd_preun does. $1 is 0 when the
# package is erased (stop and disable the service), 1 or more when this
# is the old package of an upgrade (leave it running).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now stowbridge.service >/dev/null 2>&1 || :
fi
exit 0
