# SPDX-License-Identifier: Apache-2.0
# stowbridge %postun (RPM): what %systemd_postun_with_restart does. On an
# upgrade ($1 >= 1) the service restarts with the new binary if it was
# running. On erase ($1 = 0) the spool /var/spool/stowbridge and the user
# are kept; a modified configuration is kept as stowbridge.json.rpmsave;
# /etc/stowbridge/tls (made by %post) goes only if empty: the TLS key and
# certificates in it are the administrator's.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart stowbridge.service >/dev/null 2>&1 || :
    fi
fi
if [ "$1" -eq 0 ]; then
    rmdir /etc/stowbridge/tls /etc/stowbridge 2>/dev/null || :
fi
exit 0
