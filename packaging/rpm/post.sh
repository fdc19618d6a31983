# SPDX-License-Identifier: Apache-2.0
# stowbridge %post (RPM): the spool, then systemd. $1 is 1 on a first
# installation, 2 or more on an upgrade.
#
# Policy (the same as the Debian package): a first installation neither
# enables nor starts the service; configure /etc/stowbridge/stowbridge.json,
# then "systemctl enable --now stowbridge". No preset is applied.
if [ -x /usr/bin/systemd-tmpfiles ]; then
    /usr/bin/systemd-tmpfiles --create /usr/lib/tmpfiles.d/stowbridge.conf >/dev/null 2>&1 || :
fi
if [ ! -d /var/spool/stowbridge ]; then
    install -d -m 0700 -o stowbridge -g stowbridge /var/spool/stowbridge
fi
# The DICOM TLS files (the key through LoadCredential=): created when
# missing, an existing directory is never touched.
if [ ! -d /etc/stowbridge/tls ]; then
    install -d -m 0750 -o root -g stowbridge /etc/stowbridge/tls
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    echo "stowbridge is installed but not enabled. Edit" \
         "/etc/stowbridge/stowbridge.json, then: systemctl enable --now stowbridge"
fi
exit 0
