/// The one error type adapters raise: a category, a message for people, and the cause.
public struct KMatrixError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case command
        case hostNotReady = "host-not-ready"
        case image
        case boot
        case ssh
        case probe
        case guestPanic = "guest-panic"
        case invalidInput = "invalid-input"
        case interrupted
    }

    public var code: Code
    public var message: String
    public var cause: String?

    public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause.map { String(describing: $0) }
    }

    public var description: String {
        cause.map { "\(message) (\($0))" } ?? message
    }
}
