#!/usr/bin/env bash
# Three SSH hosts on this one machine, for running `ray up configs/cluster.yaml` where no other
# machines exist: each host is a network namespace (its own address) with its own sshd, process
# table (so `ray stop` on one host leaves the others alone) and /tmp (Ray's session folders). They
# share the disk, as hosts with an NFS home would. Needs root; Debian's openssh-server, rsync and
# iptables are installed if missing. Members reach the package registries through NAT.
# Sharing /root, both workers' setup installs into the same ~/pbt-venv at once and one can fail
# (seen once: that host stays "uninitialized" in `ray status`); `ray up --restart-only` then starts it.
#
#   scripts/namespaced_hosts.sh up      # hosts 10.77.0.11 (head), .12, .13; prints the cluster config to use
#   scripts/namespaced_hosts.sh down    # stops everything in them and removes what `up` added
set -euo pipefail

HOSTS=(11 12 13)
KEY=/root/.ssh/pbt_hosts_key
CONFIG=/tmp/pbt-namespaced-cluster.yaml

up() {
    for tool in sshd rsync iptables; do
        command -v "$tool" >/dev/null || { apt-get install -y -q openssh-server rsync iptables >/dev/null; break; }
    done
    mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
    [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N "" -f "$KEY"
    grep -qf "$KEY.pub" /root/.ssh/authorized_keys 2>/dev/null || cat "$KEY.pub" >> /root/.ssh/authorized_keys
    ip link add br-pbt type bridge && ip addr add 10.77.0.1/24 dev br-pbt && ip link set br-pbt up
    sysctl -qw net.ipv4.ip_forward=1
    iptables -t nat -A POSTROUTING -s 10.77.0.0/24 ! -o br-pbt -j MASQUERADE
    for n in "${HOSTS[@]}"; do
        ip netns add "pbth$n"
        ip link add "vpbt$n" type veth peer name eth0 netns "pbth$n"
        ip link set "vpbt$n" master br-pbt up
        ip netns exec "pbth$n" sh -c "ip addr add 10.77.0.$n/24 dev eth0 && ip link set eth0 up && ip link set lo up && ip route add default via 10.77.0.1"
        ip netns exec "pbth$n" unshare --pid --fork --mount-proc --mount --propagation private \
            sh -c 'mount -t tmpfs tmpfs /tmp && exec /usr/sbin/sshd -D -o PasswordAuthentication=no' &
    done
    sleep 1
    # configs/cluster.yaml with these hosts, root and its home in place of ubuntu's.
    sed -e 's|head_ip: 10.0.0.1 |head_ip: 10.77.0.11 |' \
        -e 's|worker_ips: \[10.0.0.2, 10.0.0.3\]|worker_ips: [10.77.0.12, 10.77.0.13]|' \
        -e 's|ssh_user: ubuntu|ssh_user: root|' -e "s|ssh_private_key: ~/.ssh/id_rsa|ssh_private_key: $KEY|" \
        -e 's|/home/ubuntu/|/root/|g' "$(dirname "$0")/../configs/cluster.yaml" > "$CONFIG"
    echo "hosts up: 10.77.0.11 (head), 10.77.0.12, 10.77.0.13; cluster config: $CONFIG"
    echo "then, from the repository root: ray up $CONFIG, as in README 'Run on a Ray cluster' (paths under /root/)"
}

down() {
    for n in "${HOSTS[@]}"; do
        ip netns pids "pbth$n" 2>/dev/null | xargs -r kill -9
        ip netns del "pbth$n" 2>/dev/null || true
    done
    ip link del br-pbt 2>/dev/null || true
    iptables -t nat -D POSTROUTING -s 10.77.0.0/24 ! -o br-pbt -j MASQUERADE 2>/dev/null || true
    sysctl -qw net.ipv4.ip_forward=0
    if [ -f "$KEY.pub" ] && [ -f /root/.ssh/authorized_keys ]; then
        grep -vF "$(cat "$KEY.pub")" /root/.ssh/authorized_keys > /root/.ssh/authorized_keys.new || true
        mv /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
        [ -s /root/.ssh/authorized_keys ] || rm /root/.ssh/authorized_keys
    fi
    rm -f "$KEY" "$KEY.pub" "$CONFIG"
    echo "hosts down (what ray up installed under /root stays: ~/pbt, ~/pbt-venv, the PATH line in ~/.bashrc)"
}

"${1:?usage: $0 up|down}"
