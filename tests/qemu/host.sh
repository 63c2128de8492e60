# The full-system stages of scripts/qemu-test, on the host side (sourced by it: uses WORK,
# ROOT, DEVICE, TAG, in_root, copy_source, log, die).
#   vm_image  publisher repository + signed and unsigned bundles on FAT "sticks" (plain git
#             and ssh-keygen, as a fleet operator would), the Debian package (scripts/deb)
#             copied into the arm64 root, kernel + initrd, and a raw ext4 disk image
#   boot_1    boot with no network; the guest installs the package (apt install ./*.deb)
#             and the drop-in the Package kind needs (systemd/giter-packages.conf); plug
#             the signed stick in when the agent is up; the daemon syncs it (a File, an
#             Output, a Package from a .deb in the tree), the USB trigger unmounts it;
#             the guest takes the drop-in away again; read the stick back, verify with git
#   boot_2    boot the same disk with the daemon masked (the trigger syncs by itself);
#             a stick with an unsigned commit is refused and nothing changes
#   boot_3    the agent updates itself: stick A brings an AgentUpdate to 0.2.0 (a wheel of
#             this checkout), which runs and confirms itself; stick B brings a broken 0.3.0,
#             which crashes at every start and is rolled back; stick C carries the signed
#             status home, read with git: 0.2.0 runs and reports UpdateRolledBack

VM=$WORK/vm
PUB=$WORK/publisher
MOTD_TEXT="Welcome to qemu-pi. Put here by a signed commit on a USB stick."
PKG_NAME=qemu-hello PKG_VERSION=1.0-1
PKG_TEXT="Installed by dpkg under giter-agent.service, from a signed .deb."

git_pub() {
    git -C "$PUB/fleet" -c gpg.format=ssh -c "user.signingkey=$PUB/publisher_ed25519" \
        -c user.name="Fleet Operator" -c user.email=ops@example.invalid \
        -c "gpg.ssh.allowedSignersFile=$PUB/allowed_signers" "$@"
}

# A 64 MiB stick image: a DOS partition table and one FAT partition at 1 MiB holding
# giter/inbox/ with the given bundle, written with mtools (no loop device, no mount).
make_stick() {
    local img=$1 bundle=$2
    [ -s "$bundle" ] || die "no bundle $bundle for $(basename "$img")"
    rm -f "$img"
    truncate -s 64M "$img"
    printf 'label: dos\nstart=2048, type=e\n' | sfdisk -q "$img"
    mkfs.vfat -F 16 -n GITERSTICK --offset 2048 "$img" $(( (64 * 1024 - 1024) )) >/dev/null
    mmd -i "$img@@1M" ::giter ::giter/inbox
    mcopy -i "$img@@1M" "$bundle" "::giter/inbox/$(basename "$bundle")"
}

publish() {
    rm -rf "$PUB" && mkdir -p "$PUB/fleet"
    ssh-keygen -q -t ed25519 -N '' -C publisher -f "$PUB/publisher_ed25519"
    printf 'publisher namespaces="git" %s\n' "$(cut -d' ' -f1,2 "$PUB/publisher_ed25519.pub")" \
        >"$PUB/allowed_signers"
    git init -q -b main "$PUB/fleet"
    local dev="$PUB/fleet/devices/$DEVICE"
    mkdir -p "$dev" "$PUB/fleet/.giter/trust"
    cp "$PUB/allowed_signers" "$PUB/fleet/.giter/trust/allowed_signers"
    cat >"$dev/motd.yaml" <<EOF
apiVersion: giter.dev/v1alpha1
kind: File
metadata: {name: motd, generation: 1}
spec:
  path: /srv/giter/motd
  content: "$MOTD_TEXT\n"
  mode: "0644"
EOF
    cat >"$dev/beacon.yaml" <<EOF
apiVersion: giter.dev/v1alpha1
kind: Output
metadata: {name: beacon, generation: 1}
spec: {pin: led1, state: "on"}
EOF
    # A Debian package carried in the signed tree (the guest has no network): installed
    # by the agent's real unit under the drop-in docs/kinds.md gives (boot 1).
    local pkg="$PUB/$PKG_NAME" deb="artifacts/debs/${PKG_NAME}_${PKG_VERSION}_all.deb"
    mkdir -p "$pkg/DEBIAN" "$pkg/usr/share/$PKG_NAME" "$PUB/fleet/artifacts/debs"
    printf '%s\n' "$PKG_TEXT" >"$pkg/usr/share/$PKG_NAME/hello.txt"
    printf 'Package: %s\nVersion: %s\nArchitecture: all\nMaintainer: Fleet <ops@example.invalid>\nDescription: a package the fleet ships\n' \
        "$PKG_NAME" "$PKG_VERSION" >"$pkg/DEBIAN/control"
    dpkg-deb --root-owner-group -Zgzip --build "$pkg" "$PUB/fleet/$deb" >/dev/null \
        || die "dpkg-deb could not build the test package"
    cat >"$dev/hello.yaml" <<EOF
apiVersion: giter.dev/v1alpha1
kind: Package
metadata: {name: hello}
spec: {package: $PKG_NAME, deb: $deb, version: $PKG_VERSION}
EOF
    git_pub add -A
    git_pub commit -q -S -m "Welcome file and a beacon for $DEVICE"
    git_pub verify-commit HEAD 2>/dev/null || die "the publisher's own commit does not verify"
    git_pub rev-parse HEAD >"$PUB/spec1"
    git_pub bundle create -q "$PUB/fleet.bundle" main
    # Someone slips an unsigned commit on top: an incremental bundle the device can read.
    sed -i 's/Welcome to/Owned:/' "$dev/motd.yaml"
    git_pub commit -q -a --no-gpg-sign -m "Unsigned change"
    git_pub bundle create -q "$PUB/evil.bundle" "$(cat "$PUB/spec1")..main"
    git_pub reset -q --hard "$(cat "$PUB/spec1")"
}

# The update sticks of boot 3: giter-agent 0.2.0 and a broken 0.3.0 (every sync and
# daemon start crashes; --version works), wheels built here from this checkout
# (tests/support/agent_wheels.py: setuptools, offline), each committed with its
# AgentUpdate on top of spec1. A: main at 0.2.0; B: 0.2.0..0.3.0; C: a copy of A, to
# bring the status home after the rollback.
publish_update() {
    local dev="$PUB/fleet/devices/$DEVICE" version whl
    rm -rf "$WORK/agent-wheels"
    for version in 0.2.0 0.3.0; do
        whl=$(python3 - "$ROOT" "$WORK/agent-wheels" "$version" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, f"{sys.argv[1]}/tests/support")
import agent_wheels
why = agent_wheels.can_build()
if why:
    sys.exit(why)
print(agent_wheels.build(Path(sys.argv[2]), sys.argv[3], broken=sys.argv[3] == "0.3.0"))
EOF
) || die "could not build the giter-agent $version wheel"
        mkdir -p "$PUB/fleet/artifacts/giter-agent-$version"
        cp "$whl" "$PUB/fleet/artifacts/giter-agent-$version/"
        cat >"$dev/agent.yaml" <<EOF
apiVersion: giter.dev/v1alpha1
kind: AgentUpdate
metadata: {name: agent}
spec:
  version: $version
  wheels: artifacts/giter-agent-$version
  sha256:
  - $(cd "$(dirname "$whl")" && sha256sum "$(basename "$whl")")
  deadline: 10m
EOF
        git_pub add -A
        git_pub commit -q -S -m "giter-agent $version for $DEVICE"
        git_pub rev-parse HEAD >"$PUB/update-$version"
    done
    # A: main as it was at 0.2.0 (a whole history); B: what 0.3.0 adds to it.
    git_pub reset -q --hard "$(cat "$PUB/update-0.2.0")"
    git_pub bundle create -q "$PUB/update-a.bundle" main \
        || die "could not bundle the 0.2.0 update"
    git_pub reset -q --hard "$(cat "$PUB/update-0.3.0")"
    git_pub bundle create -q "$PUB/update-b.bundle" "$(cat "$PUB/update-0.2.0")..main" \
        || die "could not bundle the 0.3.0 update"
    git_pub reset -q --hard "$(cat "$PUB/spec1")"
}

vm_image() {
    local rootfs=$WORK/arm64
    [ -d "$rootfs/usr/bin" ] || die "no arm64 root filesystem: run the arm64 stage first"
    mkdir -p "$VM"
    publish
    make_stick "$VM/stick-signed.img" "$PUB/fleet.bundle"
    make_stick "$VM/stick-unsigned.img" "$PUB/evil.bundle"
    publish_update
    make_stick "$VM/stick-update-a.img" "$PUB/update-a.bundle"
    make_stick "$VM/stick-update-b.img" "$PUB/update-b.bundle"
    make_stick "$VM/stick-update-c.img" "$PUB/update-a.bundle"

    # The offline install path: the Debian package, built here with Debian's tools, is
    # carried into the board's root filesystem with the publisher's allowed_signers; the
    # guest installs it on its first boot with `apt install`, with no network at all
    # (guest-check). Its dependencies are Debian packages the root filesystem already has
    # (the arm64 stage includes debian/control's Depends), as on a board that has them.
    rm -f "$rootfs"/root/giter-agent_*.deb
    "$ROOT/scripts/deb" "$WORK/deb" >"$WORK/deb.log" 2>&1 \
        || { tail -n 20 "$WORK/deb.log" >&2; die "scripts/deb could not build the package"; }
    cp "$WORK"/deb/giter-agent_*_all.deb "$rootfs/root/"
    cp "$PUB/allowed_signers" "$rootfs/root/fleet.allowed_signers"
    echo "$DEVICE" >"$rootfs/etc/hostname"
    # Neither scripts/install nor the package has been here: the guest starts clean.
    [ ! -e "$rootfs/usr/bin/giter-agent" ] && [ ! -e "$rootfs/opt/giter-agent" ] \
        || die "the root filesystem already has giter-agent installed (rebuild it: arm64 stage)"

    install -D -m 0755 "$ROOT/tests/qemu/guest-check" "$rootfs/usr/local/lib/giter-qemu/check"
    install -m 0644 "$ROOT/tests/qemu/giter-qemu-check.service" "$rootfs/etc/systemd/system/"
    in_root "$rootfs" "systemctl enable giter-qemu-check.service
        # Timers and servers (installed for the test suite) that would only add load to a
        # short boot; the guest has no network anyway.
        systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
            fstrim.timer ssh.service lighttpd.service >/dev/null 2>&1 || true" >/dev/null

    cp "$(ls "$rootfs"/boot/vmlinuz-* | tail -n1)" "$VM/vmlinuz"
    cp "$(ls "$rootfs"/boot/initrd.img-* | tail -n1)" "$VM/initrd.img"
    log "kernel $(basename "$(ls "$rootfs"/boot/vmlinuz-* | tail -n1)"), initrd $(du -h "$VM/initrd.img" | cut -f1)"
    rm -f "$VM/root.img"
    mkfs.ext4 -q -F -L giter-root -d "$rootfs" "$VM/root.img" 3G
}

# Boot the VM; each time the guest says it is ready for the next stick, take the previous
# one out and plug the next in, through the monitor.
# $1: boot number, $2: stick images (space-separated, plugged in that order), $3: extra
# kernel arguments. The guest says "ready for stick" for the first, "ready for stick #N"
# for the N-th.
boot_vm() {
    local n=$1 extra=$3 sticks drives=() i
    read -r -a sticks <<<"$2"
    local serial=$VM/serial-$n.log mon=$VM/monitor-$n.sock
    rm -f "$serial" "$mon"
    for i in "${!sticks[@]}"; do
        drives+=(-drive "if=none,id=stick$i,file=${sticks[$i]},format=raw")
    done
    timeout 1500 qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 \
        -accel tcg,thread=multi -nodefaults -no-user-config -display none -no-reboot \
        -kernel "$VM/vmlinuz" -initrd "$VM/initrd.img" \
        -append "root=/dev/vda rw console=ttyAMA0 giter_qemu_boot=$n $extra" \
        -drive if=none,id=root,file="$VM/root.img",format=raw -device virtio-blk-pci,drive=root \
        -device virtio-rng-pci -device qemu-xhci,id=xhci "${drives[@]}" \
        -nic none -serial "file:$serial" -monitor "unix:$mon,server,nowait" &
    local qemu=$!
    for i in "${!sticks[@]}"; do
        local tag="$TAG ready for stick" waited=0
        [ "$i" -eq 0 ] || tag="$TAG ready for stick #$((i + 1))"
        until grep -aq "$tag" "$serial" 2>/dev/null; do
            if ! kill -0 "$qemu" 2>/dev/null || [ "$waited" -ge 900 ]; then
                kill "$qemu" 2>/dev/null || true
                tail -n 30 "$serial" >&2 || true
                die "boot $n: the guest never became ready for stick $((i + 1)) (serial log: $serial)"
            fi
            sleep 2; waited=$((waited + 2))
        done
        log "boot $n: guest ready after ~${waited} s; plugging in $(basename "${sticks[$i]}")"
        python3 - "$mon" "$i" <<'EOF' || die "boot $n: could not plug the stick in"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
i = int(sys.argv[2])
time.sleep(0.5)
s.recv(4096)  # the monitor's banner
commands = [f"device_del stick{i - 1}-dev"] if i else []
commands.append(f"device_add usb-storage,bus=xhci.0,drive=stick{i},id=stick{i}-dev,removable=on")
for command in commands:
    s.sendall(command.encode() + b"\n")
    time.sleep(2)
    reply = s.recv(4096).decode(errors="replace")
    if "Error" in reply or "error" in reply:
        sys.exit(f"monitor: {command}: {reply}")
EOF
    done
    if ! wait "$qemu"; then
        tail -n 40 "$serial" >&2 || true
        die "boot $n: QEMU did not power off by itself in time (serial log: $serial)"
    fi
    grep -a "$TAG" "$serial" | grep -v "GITER-QEMU-LOG" | sed "s/^.*$TAG/  guest:/" >&2
    grep -q "$TAG done" "$serial" || die "boot $n: the guest check did not finish"
}

fact() { grep -a "$TAG $1" "$VM/serial-$2.log" | head -n1 | sed "s/^.*$TAG $1 *//"; }

expect() {  # $1: what, $2: haystack, $3: needle
    case "$2" in *"$3"*) ;; *) die "$1: expected '$3' in: $2" ;; esac
}

# Read the stick image back and check the device's answer with plain git.
read_stick() {
    local n=$1 stick=$2 out=$VM/outbox-$1
    rm -rf "$out" && mkdir -p "$out"
    mcopy -n -i "$stick@@1M" "::giter/outbox/$DEVICE.bundle" "::giter/outbox/$DEVICE.txt" "$out/" \
        || die "boot $n: no status bundle and receipt on the stick"
    sed 's/^/  receipt: /' "$out/$DEVICE.txt" >&2
    printf '%s\n' "$(fact key "$n")" >"$out/device_signers"
    git_pub bundle verify -q "$out/$DEVICE.bundle" >/dev/null 2>&1 \
        || die "boot $n: git bundle verify refuses the status bundle"
    git_pub fetch -q "$out/$DEVICE.bundle" "+refs/heads/status/*:refs/remotes/device-$n/status/*"
    git -C "$PUB/fleet" -c gpg.format=ssh -c "gpg.ssh.allowedSignersFile=$out/device_signers" \
        verify-commit "device-$n/status/$DEVICE" 2>"$out/verify.txt" \
        || die "boot $n: git verify-commit refuses the status commit: $(cat "$out/verify.txt")"
    log "boot $n: $(head -n1 "$out/verify.txt")"
}

boot_1() {
    boot_vm 1 "$VM/stick-signed.img" ""
    local spec1 status want
    spec1=$(cat "$PUB/spec1")
    expect "boot 1 network" "$(fact network 1)" "interfaces: lo;"
    expect "boot 1 offline install" "$(fact install 1)" "giter-agent $(
        sed -n '1s/^giter-agent (\([^)]*\)).*/\1/p' "$ROOT/debian/changelog") installed"
    expect "boot 1 config by postinst" "$(fact config 1)" "device_id = \"$DEVICE\""
    expect "boot 1 usb unit" "$(fact usb 1)" "Result=success"
    expect "boot 1 status line" "$(fact status 1)" "giter-agent $DEVICE: in-sync"
    want=$(printf '%s\n' "$MOTD_TEXT" | sha256sum | cut -d' ' -f1)
    expect "boot 1 File resource" "$(fact motd 1)" "$want"
    expect "boot 1 doctor" "$(fact doctor 1)" "0"
    grep -aq "SAFE TO REMOVE" "$VM/serial-1.log" || die "boot 1: no SAFE TO REMOVE on the console"
    expect "boot 1 service" "$(fact service 1)" "ActiveState=active"
    grep -aq "synced by the daemon" "$VM/serial-1.log" \
        || die "boot 1: the stick was not synced by the running daemon"
    read_stick 1 "$VM/stick-signed.img"
    expect "boot 1 receipt" "$(cat "$VM/outbox-1/$DEVICE.txt")" "result:         APPLIED"
    # The status commit answers the signed spec, and the Output was driven on the pin.
    status=$(git_pub log -1 --format=%P "device-1/status/$DEVICE")
    expect "boot 1 status parents" "$status" "$spec1"
    local beacon
    beacon=$(git_pub show "device-1/status/$DEVICE:devices/$DEVICE/beacon.yaml")
    expect "boot 1 Output status" "$beacon" "reason: Set"
    expect "boot 1 Output pin value" "$beacon" "value: 1"
    # The Package, installed by the daemon under the drop-in (systemd/giter-packages.conf),
    # then the drop-in taken away again: boots 2 and 3 run the sandboxed unit as giter.
    expect "boot 1 drop-in" "$(fact dropin 1)" "User=root ProtectSystem=strict"
    expect "boot 1 package installed" "$(fact package 1)" "$PKG_NAME $PKG_VERSION ii"
    expect "boot 1 package file" "$(fact package 1)" "$PKG_TEXT"
    expect "boot 1 drop-in removed" "$(fact reverted 1)" "giter ActiveState=active"
    local hello
    hello=$(git_pub show "device-1/status/$DEVICE:devices/$DEVICE/hello.yaml")
    expect "boot 1 Package status" "$hello" "reason: Installed"
    expect "boot 1 Package version" "$hello" "version: $PKG_VERSION"
    log "boot 1: applied, File written, Output on, package installed, status verified by git"
}

boot_3() {
    # A fresh disk (vm-image alone) installs the package in this boot: either way works.
    boot_vm 3 "$VM/stick-update-a.img $VM/stick-update-b.img $VM/stick-update-c.img" ""
    local doc status summary c found=""
    expect "boot 3 update that works" "$(fact update1 3)" "confirmed 0.2.0"
    expect "boot 3 update that fails" "$(fact update2 3)" "rolled-back 0.3.0"
    expect "boot 3 service" "$(fact service 3)" "ActiveState=active"
    read_stick 3 "$VM/stick-update-c.img"
    status=$(git_pub show "device-3/status/$DEVICE:devices/$DEVICE/agent.yaml")
    expect "boot 3 AgentUpdate status" "$status" "reason: UpdateRolledBack"
    expect "boot 3 running version" "$status" "running: 0.2.0"
    expect "boot 3 rollback cause" "$status" "was started 2 times without writing a status commit"
    summary=$(git_pub show "device-3/status/$DEVICE:.giter/status/$DEVICE.yaml")
    expect "boot 3 agentVersion" "$summary" "agentVersion: 0.2.0"
    # Earlier in the same signed chain: 0.2.0 reported itself as the running version.
    for c in $(git_pub log --format=%H "device-3/status/$DEVICE"); do
        doc=$(git_pub show "$c:devices/$DEVICE/agent.yaml" 2>/dev/null || true)
        case "$doc" in *"reason: Updated"*) case "$doc" in *"running: 0.2.0"*)
            found=$c; break ;; esac ;; esac
    done
    [ -n "$found" ] || die "boot 3: no status commit in which 0.2.0 reports itself Updated"
    log "boot 3: 0.2.0 installed and confirmed, 0.3.0 rolled back, status verified by git"
}

boot_2() {
    # The daemon masked: this time the USB trigger runs `giter-agent sync --usb` itself.
    boot_vm 2 "$VM/stick-unsigned.img" "systemd.mask=giter-agent.service"
    local spec1 want
    spec1=$(cat "$PUB/spec1")
    expect "boot 2 usb unit" "$(fact usb 2)" "Result=success"
    expect "boot 2 status line" "$(fact status 2)" "giter-agent $DEVICE: refused: UnsignedCommit"
    expect "boot 2 LED code" "$(fact status 2)" "[LED: 3 quick blinks"
    grep -aq "refused: UnsignedCommit" "$VM/serial-2.log" \
        || die "boot 2: the console does not show the refusal"
    want=$(printf '%s\n' "$MOTD_TEXT" | sha256sum | cut -d' ' -f1)
    expect "boot 2 File unchanged" "$(fact motd 2)" "$want"
    grep -aq "SAFE TO REMOVE" "$VM/serial-2.log" || die "boot 2: no SAFE TO REMOVE on the console"
    read_stick 2 "$VM/stick-unsigned.img"
    expect "boot 2 receipt" "$(cat "$VM/outbox-2/$DEVICE.txt")" "result:         REFUSED"
    expect "boot 2 receipt spec" "$(cat "$VM/outbox-2/$DEVICE.txt")" "spec applied:   $spec1"
    log "boot 2: unsigned commit refused, nothing applied, refusal reported signed"
}
