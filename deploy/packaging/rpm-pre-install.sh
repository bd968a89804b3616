getent group govbus >/dev/null || groupadd -r govbus
getent passwd govbus >/dev/null || useradd -r -g govbus -d /var/lib/govbus -s /sbin/nologin -c "govbus services" govbus
mkdir -p /etc/govbus && chown root:govbus /etc/govbus && chmod 0750 /etc/govbus
