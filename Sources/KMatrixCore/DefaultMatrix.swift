/// The matrix kmatrix runs when no `matrix.yaml` is given. The repository's `matrix.yaml` is a copy
/// of this text (a test keeps the two identical; scripts/embed-matrix regenerates this file).
public enum DefaultMatrix {
    public static let fileName = "<embedded default matrix>"

    public static let text = #"""
# kmatrix default matrix: which kernels drop, which re-inject, and does the rmem mitigation work.
# Outcomes and scenarios: see README.md. The first matching rule wins; a guest's `expect` overrides.
defaults:
  memory_mib: 256
  timeouts: { boot: 60, ready: 240, deploy: 60, scenario: 180 }

guests:
  - name: host
    image: { kind: host }

  - name: debian-11-5.10
    image: { kind: kernel, suite: bullseye }
  - name: debian-12-6.1
    image: { kind: kernel, suite: bookworm }
  - name: debian-13-6.12
    image: { kind: kernel, suite: trixie }

  # Debian's 6.1 with upstream 931401137f60 reverted: stands in for pre-4.6 kernels.
  - name: legacy-6.1-failopen-reverted
    image: { kind: kernel, recipe: legacy-failopen }
    expect:
      failopen-socket-overflow: dropped
      liveness-probe: dropped

  # A Debian 11 cloud-like disk built here: proves the vendor-image path end to end.
  - name: cloud-standin-debian-11
    image: { kind: cloud, file: debian-11-cloud-standin.qcow2, user: cloud-user, recipe: cloud-standin }
    memory_mib: 512
    vcpus: 2      # a distro boot under TCG: systemd and cloud-init gain ~20 s from a second vCPU

  # The four host families of the original report. Download each image from its vendor, then
  # `kmatrix images add NAME FILE`; until then their rows are `skipped` with these instructions.
  - name: rhel-7.9
    kernel: 3.10.0-1160.el7.x86_64
    image: { kind: cloud, file: rhel-server-7.9-x86_64-kvm.qcow2, user: cloud-user,
             source: "Red Hat Customer Portal > Downloads > RHEL 7.9 > Red Hat Enterprise Linux 7.9 KVM Guest Image" }
    memory_mib: 1024
    vcpus: 2
  - name: ubuntu-20.04-5.8
    kernel: 5.8.0-63-generic
    image: { kind: cloud, file: focal-server-cloudimg-amd64.img, user: ubuntu,
             source: "cloud-images.ubuntu.com/focal (20.04 HWE 5.8 era release, e.g. release-20210720), or groovy 20.10" }
    memory_mib: 1024
    vcpus: 2
  - name: rhel-8
    kernel: 4.18.0-513.el8.x86_64
    image: { kind: cloud, file: rhel-8.9-x86_64-kvm.qcow2, user: cloud-user,
             source: "Red Hat Customer Portal > Downloads > RHEL 8 > Red Hat Enterprise Linux 8.x KVM Guest Image" }
    memory_mib: 1024
    vcpus: 2
  - name: amazonlinux-2
    kernel: 4.14.336-256.557.amzn2.x86_64
    image: { kind: cloud, file: amzn2-kvm-2.0-x86_64.xfs.gpt.qcow2, user: ec2-user,
             source: "cdn.amazonlinux.com/os-images/latest/kvm/ (Amazon Linux 2 KVM image)" }
    memory_mib: 1024
    vcpus: 2

expect:
  failopen-socket-overflow:
    - { when: "kernel < 4.6", outcome: dropped }
    - { outcome: reinjected }
  strict-socket-overflow:
    - { outcome: dropped }
  failopen-queue-full:
    - { when: "kernel < 3.6", outcome: dropped }
    - { outcome: reinjected }
  rmem-mitigation:
    - { when: "kernel < 3.6", outcome: dropped }
    - { outcome: reinjected }
  live-consumer:
    - { outcome: delivered }
  liveness-probe:
    - { when: "kernel < 4.6", outcome: dropped }
    - { outcome: reinjected }

"""#

    public static func load() throws(MatrixError) -> Matrix {
        try MatrixParser.parse(text, file: fileName)
    }
}
