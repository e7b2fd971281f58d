/// Commands for a remote POSIX shell (ssh runs its command through the guest's `sh -c`): every
/// argument single-quoted, so no value is ever read as shell syntax. The one place kmatrix
/// builds shell text; nothing else interpolates into a command line.
public enum ShellQuote {
    public static func quote(_ argument: String) -> String {
        if !argument.isEmpty && argument.unicodeScalars.allSatisfy(isSafe) { return argument }
        return "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    public static func command(_ arguments: [String]) -> String {
        arguments.map(quote).joined(separator: " ")
    }

    static func isSafe(_ scalar: Unicode.Scalar) -> Bool {
        InputRules.isAlphanumeric(scalar) || "-_./=:,+@%".unicodeScalars.contains(scalar)
    }
}
