import Foundation
import KMatrixCore

/// Deterministic fake nights for tests: no clock, no randomness, the same runs on every machine.
public enum HistoryFixtures {
    /// Kernels the rows cycle through, with the distribution each belongs to.
    public static let kernels: [(kernel: String, distro: String)] = [
        ("6.1.0-56-cloud-amd64", "Debian GNU/Linux 12 (bookworm)"),
        ("5.10.0-32-cloud-amd64", "Debian GNU/Linux 11 (bullseye)"),
        ("6.12.38+deb13-cloud-amd64", "Debian GNU/Linux 13 (trixie)"),
        ("4.18.0-553.el8_10.x86_64", "Red Hat Enterprise Linux 8.10 (Ootpa)"),
    ]
    /// The kernel row 0 moves to halfway through the nights.
    static let upgradedKernel = "6.1.0-57-cloud-amd64"
    static let firstNight = Date(timeIntervalSince1970: 1_793_498_400)  // 2026-11-01T02:00:00Z

    /// `nights` runs of `guests` rows × the first `scenarios` scenarios of the catalogue (more
    /// than the catalogue holds get made-up names), one a day. What changes, so every feature of
    /// a history shows up even in a small one:
    /// - row 0 moves from 6.1.0-56 to 6.1.0-57 at night `nights / 2`, and its first scenario
    ///   flips from its usual outcome to `dropped` with it (a kernel that regressed);
    /// - every row `g` with `g % 4 == 1` turns `mixed` in scenario `(g / 4) % scenarios` from
    ///   night `nights / 3 + g % 3` on, and back two nights later;
    /// - every row `g` with `g % 5 == 2` is `flaky` in scenario `g % scenarios` on each night
    ///   `n` with `(n + g) % 4 == 0`;
    /// - the last night of an even number of nights runs on the same calendar day as the one
    ///   before it (a re-run), which still counts as a night.
    public static func synthetic(guests: Int, scenarios: Int, nights: Int) -> [RunResult] {
        let scenarioNames = (0..<max(scenarios, 0)).map { index in
            index < Scenario.catalogue.count ? Scenario.catalogue[index].name : "scenario-\(index + 1)"
        }
        let guestNames = (0..<max(guests, 0)).map { String(format: "guest-%02d", $0) }
        let changeNight = nights / 2
        return (0..<max(nights, 0)).map { night in
            var started = firstNight.addingTimeInterval(Double(night) * 86_400)
            if nights % 2 == 0, nights > 1, night == nights - 1 {
                started = firstNight.addingTimeInterval(Double(night - 1) * 86_400 + 6 * 3_600)
            }
            var cells: [CellResult] = []
            cells.reserveCapacity(guestNames.count * scenarioNames.count)
            for (guest, name) in guestNames.enumerated() {
                let base = kernels[guest % kernels.count]
                let kernel = guest == 0 && night >= changeNight ? upgradedKernel : base.kernel
                for (scenario, scenarioName) in scenarioNames.enumerated() {
                    let usual = usualOutcome(scenario)
                    var outcome = usual
                    if guest == 0, scenario == 0, night >= changeNight { outcome = .dropped }
                    let flipNight = nights / 3 + guest % 3
                    if guest % 4 == 1, scenario == (guest / 4) % scenarioNames.count, night >= flipNight, night < flipNight + 2 { outcome = .mixed }
                    if guest % 5 == 2, scenario == guest % scenarioNames.count, (night + guest) % 4 == 0 { outcome = .flaky }
                    cells.append(cell(guest: name, scenario: scenarioName, kernel: kernel, distro: base.distro, outcome: outcome, expected: usual))
                }
            }
            let metadata = RunMetadata(id: String(format: "night-%02d", night + 1), started: started, durationS: 600 + Double(night),
                                       host: "ci-\(night % 2 == 0 ? "a" : "b")", hostKernel: "6.12.38+deb13-amd64", libvirt: "9.0.0",
                                       qemu: "7.2.0", accelerator: "kvm", matrix: "matrix.yaml", kmatrixVersion: "0.2.0")
            return RunResult(run: metadata, guests: guestNames, scenarios: scenarioNames, cells: cells)
        }
    }

    /// What a fixed kernel shows in each scenario (the README's "fixed" column), so the fake rows
    /// read like real ones.
    static func usualOutcome(_ scenario: Int) -> Outcome {
        switch scenario % 6 {
        case 1: .dropped
        case 4: .delivered
        default: .reinjected
        }
    }

    static func cell(guest: String, scenario: String, kernel: String, distro: String, outcome: Outcome, expected: Outcome) -> CellResult {
        let sent = scenario == Scenario.livenessProbe.name ? 5 : 2000
        let lost = switch outcome {
        case .dropped: sent
        case .mixed: sent / 2
        default: 0
        }
        return CellResult(guest: guest, scenario: scenario, kernel: kernel, distro: distro, outcome: outcome, expected: expected,
                          sent: sent, received: sent - lost, lost: lost, reason: "synthetic \(outcome.rawValue)", durationS: 1)
    }
}
