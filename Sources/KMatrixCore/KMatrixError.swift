import Foundation

/// The one error type of kmatrix (docs/architecture.md, "Errors"): a code that decides what
/// happens next (retry, which cell failure, which exit status), a sentence for people, and the
/// error underneath, if any. Nothing branches on the message: rewording it changes no behaviour.
public struct KMatrixError: Error, CustomStringConvertible {
    /// What went wrong, for code: the exit status (`exitStatus(for:)`) and, in a cell, the
    /// failure kind (`CellFailure.Kind`, which says how the two relate).
    public enum Code: String, Sendable, CaseIterable {
        /// Something the user gave (a flag, matrix.yaml, a kernel or image file) is wrong.
        case invalidInput = "invalid-input"
        /// This machine cannot run guests: libvirt down, a tool missing, not root.
        case hostNotReady = "host-not-ready"
        /// A libvirt call failed.
        case hypervisor
        /// An image could not be built, found or verified.
        case image
        /// The guest did not start or did not reach its ready point.
        case boot
        /// The guest's kernel panicked or oopsed (the console line is attached).
        case guestPanic = "guest-panic"
        /// The guest's virtual machine stopped (its QEMU exited or was killed).
        case guestStopped = "guest-stopped"
        /// The hypervisor ended the guest, not the guest itself: libvirtd stopped or restarted and
        /// destroyed the run's guests with the connection that started them.
        case hypervisorLost = "hypervisor-lost"
        /// The guest has no network interface, so nothing can reach it.
        case noNetwork = "no-network"
        /// OpenSSH could not reach the guest (its own failure, exit 255).
        case ssh
        /// The probe could not be deployed or run, or its prerequisites are missing.
        case probe
        /// An external program failed.
        case command
        /// An operation outlived its limit.
        case timeout
        /// The user interrupted the run (Ctrl-C, SIGTERM).
        case interrupted
        /// Reading or writing kmatrix's own files failed (results, scratch, cache).
        case io
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?
    /// The console line that explains the failure (a panic, what the kernel lacks), if any.
    public var consoleLine: String?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil, consoleLine: String? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
        self.consoleLine = consoleLine
    }

    public var description: String { message }

    /// The message followed by the chain of causes, for `--verbose` logs.
    public var detailedDescription: String {
        var text = message
        var next = cause
        while let error = next {
            if let inner = error as? KMatrixError {
                text += "\n  caused by: \(inner.message)"
                next = inner.cause
            } else {
                text += "\n  caused by: \(error)"
                next = nil
            }
        }
        return text
    }

    /// Every code's exit status, in one place (the contract: 2 input, 3 infrastructure).
    public static func exitStatus(for code: Code) -> ExitStatus {
        switch code {
        case .invalidInput: .invalidInput
        case .hostNotReady, .hypervisor, .image, .boot, .guestPanic, .guestStopped, .hypervisorLost, .noNetwork, .ssh, .probe, .command, .timeout, .interrupted, .io:
            .infrastructure
        }
    }

    public var exitStatus: ExitStatus { Self.exitStatus(for: code) }

    /// Any error as a `KMatrixError`: ours pass through, cancellation is an interruption, a
    /// matrix problem is invalid input, Foundation's file errors are I/O with a readable sentence.
    public static func from(_ error: any Error, whileDoing what: String? = nil) -> KMatrixError {
        if let error = error as? KMatrixError { return error }
        if error is CancellationError { return KMatrixError(.interrupted, "interrupted" + (what.map { " while \($0)" } ?? ""), cause: error) }
        if let error = error as? MatrixError { return KMatrixError(.invalidInput, error.description, cause: error) }
        let prefix = what.map { "\($0): " } ?? ""
        if let error = error as? CocoaError { return KMatrixError(.io, prefix + FileProblem.describe(error), cause: error) }
        return KMatrixError(.command, prefix + String(describing: error), cause: error)
    }
}

/// The contract's exit statuses (docs/architecture.md, "Exit status"): the one table every
/// command's end goes through, by `KMatrixError.exitStatus(for:)` or `KMatrixExit`.
public enum ExitStatus: Int32, Sendable {
    /// Every judged cell matched its expectation (or a command that judges nothing succeeded).
    case allMatched = 0
    /// At least one cell differs from its expectation, or a comparison found a regression.
    case differs = 1
    /// Invalid input or usage, found before the first boot.
    case invalidInput = 2
    /// Nothing could be measured, the run was interrupted, or results could not be written.
    case infrastructure = 3
}

/// A command that ends with a status other than by an error of its own — a run whose cells
/// differ, a bisect that is inconclusive — with the sentence that says why, printed once by the
/// CLI. Commands throw this instead of building exit codes themselves.
public struct KMatrixExit: Error, Sendable, Equatable {
    public var status: ExitStatus
    public var sentence: String?

    public init(_ status: ExitStatus, _ sentence: String? = nil) {
        self.status = status
        self.sentence = sentence
    }
}

/// One sentence for Foundation's file errors, instead of an NSCocoaErrorDomain dump.
public enum FileProblem {
    public static func describe(_ error: CocoaError) -> String {
        let path = (error.userInfo[NSFilePathErrorKey] as? String) ?? error.filePath ?? "a file"
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return "\(path): \(String(cString: strerror(Int32(underlying.code))))"
        }
        switch error.code {
        case .fileNoSuchFile, .fileReadNoSuchFile: return "\(path): no such file or directory"
        case .fileWriteNoPermission, .fileReadNoPermission: return "\(path): permission denied"
        case .fileWriteOutOfSpace: return "\(path): no space left on the device"
        case .fileWriteFileExists: return "\(path): a file is in the way"
        case .fileReadCorruptFile: return "\(path): unreadable"
        case .fileWriteVolumeReadOnly: return "\(path): the file system is read-only"
        case .fileWriteInvalidFileName, .fileReadInvalidFileName: return "\(path): not a valid file name"
        case .fileReadTooLarge: return "\(path): too large to read"
        default: return "\(path): cannot be read or written"
        }
    }
}
