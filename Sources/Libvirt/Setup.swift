import CLibvirt

/// libvirt's process-wide setup, done once before the first connection.
///
/// `virInitialize` is required before libvirt is used from several threads. The no-op
/// error handler stops libvirt from printing every error to stderr by itself: errors
/// reach callers as `LibvirtError` instead, and stderr is the harness's log.
/// A global `let` is initialised lazily and exactly once, even under concurrent access.
let libvirtSetup: Result<Void, LibvirtError> = {
    virSetErrorFunc(nil, { _, _ in })
    guard virInitialize() == 0 else {
        return .failure(LibvirtError.takeLast(operation: "virInitialize"))
    }
    return .success(())
}()

/// Formats libvirt's packed `major * 1_000_000 + minor * 1_000 + release` version number.
func versionString(_ packed: UInt) -> String {
    "\(packed / 1_000_000).\(packed / 1_000 % 1_000).\(packed % 1_000)"
}
