#!/usr/bin/env bash
# Two "hosts" for horovodrun on this machine: pctr-a and pctr-b, two loopback addresses reached over ssh
# (as this user, with a key of their own) through an sshd of ours on port 2222 (conf/cluster.toml's
# train.ssh_port), apart from any system sshd. Plain `ssh pctr-a` works afterwards. Prints nothing when
# everything is already in place.
set -euo pipefail
port=2222
hosts=(pctr-a pctr-b)
addresses=(127.0.0.2 127.0.0.3)
key=$HOME/.ssh/pctr_cluster
config=/etc/ssh/pctr_cluster_sshd_config
pidfile=/run/pctr_cluster_sshd.pid
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi

if [ ! -x /usr/sbin/sshd ]; then
  echo "sshd: installing openssh-server (apt)"
  $sudo apt-get update -qq >/dev/null
  # with an init system, this also starts Debian's sshd on port 22 (in a container without one, it does not)
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openssh-server >/dev/null
fi

for i in "${!hosts[@]}"; do
  if ! grep -qE "^[^#]*[[:space:]]${hosts[$i]}([[:space:]]|$)" /etc/hosts; then
    echo "sshd: ${hosts[$i]} is ${addresses[$i]} in /etc/hosts"
    echo "${addresses[$i]} ${hosts[$i]}" | $sudo tee -a /etc/hosts >/dev/null
  fi
done

mkdir -p "$HOME/.ssh"
chmod 700 "$HOME/.ssh"
if [ ! -f "$key" ]; then
  echo "sshd: key pair $key"
  ssh-keygen -q -t ed25519 -N "" -C pctr-cluster -f "$key"
fi
touch "$HOME/.ssh/authorized_keys"
chmod 600 "$HOME/.ssh/authorized_keys"
if ! grep -qF "$(cat "$key.pub")" "$HOME/.ssh/authorized_keys"; then
  cat "$key.pub" >>"$HOME/.ssh/authorized_keys"
fi
touch "$HOME/.ssh/config"
chmod 600 "$HOME/.ssh/config"
if ! grep -q "^Host ${hosts[*]}$" "$HOME/.ssh/config"; then
  echo "sshd: ssh settings of ${hosts[*]} in $HOME/.ssh/config"
  # the hosts are this machine: their host keys are ours, nothing to remember or warn about
  printf '%s\n' "" "Host ${hosts[*]}" "  Port $port" "  IdentityFile $key" "  IdentitiesOnly yes" \
    "  StrictHostKeyChecking no" "  UserKnownHostsFile /dev/null" "  LogLevel ERROR" >>"$HOME/.ssh/config"
fi

if ssh -o BatchMode=yes -o ConnectTimeout=5 pctr-a true 2>/dev/null \
  && ssh -o BatchMode=yes -o ConnectTimeout=5 pctr-b true 2>/dev/null; then
  exit 0
fi
echo "sshd: starting an sshd on ${addresses[*]} port $port"
$sudo ssh-keygen -A >/dev/null
$sudo mkdir -p /run/sshd
{
  for a in "${addresses[@]}"; do echo "ListenAddress $a:$port"; done
  echo "PidFile $pidfile"
  echo "PermitRootLogin prohibit-password"
  echo "PasswordAuthentication no"
  # no login session to set up: PAM would only slow every connection (horovodrun opens several per run)
  echo "UsePAM no"
} | $sudo tee "$config" >/dev/null
$sudo /usr/sbin/sshd -f "$config"
for _ in $(seq 50); do
  ssh -o BatchMode=yes -o ConnectTimeout=2 pctr-b true 2>/dev/null && exit 0
  sleep 0.1
done
echo "sshd: ssh pctr-b fails on port $port:" >&2
ssh -o BatchMode=yes -o ConnectTimeout=2 pctr-b true >&2
exit 1
