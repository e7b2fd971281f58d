/// What kmatrix accepts from files and flags other people wrote (docs/architecture.md, "Input").
/// kmatrix runs as root: every value that reaches a command line, a path, domain XML or YAML is
/// checked here first, against a whitelist, before anything uses it.
public enum InputRules {
    /// Guest and row names become domain, namespace and file names: letters, digits, `-._+`
    /// (`+` for kernel releases such as 6.12.118+deb13-cloud-amd64, which name kernel-set rows),
    /// starting with a letter or digit (so never an option), at most 48 characters (a domain is
    /// `kmatrix-<run id>-<name>`, a namespace file lives in /run/netns).
    public static let maximumNameLength = 48

    public static func nameProblem(_ name: String) -> String? {
        guard !name.isEmpty else { return "is empty" }
        guard name.count <= maximumNameLength else { return "is \(name.count) characters long; at most \(maximumNameLength) fit in domain and namespace names" }
        guard let first = name.unicodeScalars.first, isAlphanumeric(first) else { return "must start with a letter or a digit" }
        guard name.unicodeScalars.allSatisfy({ isAlphanumeric($0) || "-._+".unicodeScalars.contains($0) }) else {
            return "may hold only letters, digits, '-', '.', '_' and '+'"
        }
        return nil
    }

    /// A run id read back from a results.json: it appears in code spans, file names and
    /// messages, so it is a plain name (merged ids add `+`).
    public static func runIDProblem(_ id: String) -> String? {
        guard !id.isEmpty, id.utf8.count <= 100 else { return "must be 1 to 100 characters" }
        guard let first = id.unicodeScalars.first, isAlphanumeric(first),
              id.unicodeScalars.allSatisfy({ isAlphanumeric($0) || "-._+".unicodeScalars.contains($0) }) else {
            return "may hold only letters, digits and '-._+', starting with a letter or digit"
        }
        return nil
    }

    /// A POSIX (portable) user name as useradd accepts it: it goes to ssh (`-l`) and cloud-init.
    public static func userProblem(_ user: String) -> String? {
        guard !user.isEmpty, user.unicodeScalars.count <= 32 else { return "must be 1 to 32 characters" }
        guard let first = user.unicodeScalars.first, ("a"..."z").contains(first) || first == "_" else {
            return "must start with a lower-case letter or '_'"
        }
        guard user.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }) else {
            return "may hold only lower-case letters, digits, '_' and '-'"
        }
        return nil
    }

    /// An image file name inside kmatrix's image folder: a plain name, never a path.
    public static func fileNameProblem(_ name: String) -> String? {
        guard !name.isEmpty, name.utf8.count <= 200 else { return "must be 1 to 200 bytes" }
        guard name != ".", name != "..", !name.contains("/") else { return "must be a plain file name, not a path" }
        guard let first = name.unicodeScalars.first, isAlphanumeric(first) else { return "must start with a letter or a digit" }
        guard name.unicodeScalars.allSatisfy({ isAlphanumeric($0) || "-._+".unicodeScalars.contains($0) }) else {
            return "may hold only letters, digits, '-', '.', '_' and '+'"
        }
        return nil
    }

    /// A kernel release as `uname -r` prints it (3.10.0-1160.el7.x86_64, 6.12.118+deb13-cloud-amd64).
    public static func releaseProblem(_ release: String) -> String? {
        guard !release.isEmpty, release.utf8.count <= 64 else { return "must be 1 to 64 characters" }
        guard KernelVersion(release: release) != nil else { return "must start with a version such as 4.18" }
        guard release.unicodeScalars.allSatisfy({ isAlphanumeric($0) || "-._+~".unicodeScalars.contains($0) }) else {
            return "may hold only letters, digits and '-._+~'"
        }
        return nil
    }

    /// A path on this machine given in matrix.yaml or on the command line (a kernel, modules).
    /// It is only ever passed as one argument after an absolute-path check, but control
    /// characters have no business in it and would garble every message that names it.
    public static func pathProblem(_ path: String) -> String? {
        guard !path.isEmpty, path.utf8.count <= 4096 else { return "must be 1 to 4096 bytes" }
        guard !path.unicodeScalars.contains(where: isControl) else { return "contains control characters" }
        return nil
    }

    /// Free text shown to people (an image's download hint): one line of printable text.
    public static func textProblem(_ text: String, limit: Int = 300) -> String? {
        guard text.count <= limit else { return "is longer than \(limit) characters" }
        guard !text.unicodeScalars.contains(where: isControl) else { return "contains control characters" }
        return nil
    }

    public static func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
        ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
    }

    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value)
    }

    /// A value quoted for a message: unsafe characters as visible escapes (`SafeText`), long
    /// values cut, so a binary or hostile input never reaches the terminal raw.
    public static func quoted(_ value: some StringProtocol, limit: Int = 80) -> String {
        var text = ""
        var count = 0
        for scalar in value.unicodeScalars {
            if count >= limit { text += "…"; break }
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\u{FFFD}": text += "\\ufffd"
            case _ where SafeText.isUnsafe(scalar): text += SafeText.escaped(scalar)
            default: text.unicodeScalars.append(scalar)
            }
            count += 1
        }
        return "\"" + text + "\""
    }
}
