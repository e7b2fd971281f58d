/// The builds under `images/` a matrix may name, in one place (docs/architecture.md, "Images"):
/// the parser accepts these names, the image catalog runs these scripts into these folders.
public struct RecipeDefinition: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// Builds a kernel (`image: { kind: kernel, recipe: … }`), then booted with kmatrix's rootfs.
        case kernel
        /// Builds a distribution disk (`image: { kind: cloud, recipe: … }`).
        case cloud
    }

    public var name: String
    public var kind: Kind
    /// The script, relative to the checkout's `images/`.
    public var script: String
    /// The output folder, under the cache's `images/`.
    public var output: String
}

public enum Recipes {
    public static let all: [RecipeDefinition] = [
        RecipeDefinition(name: "legacy-failopen", kind: .kernel, script: "legacy-kernel/build.sh", output: "legacy-failopen-bzimage"),
        RecipeDefinition(name: "cloud-standin", kind: .cloud, script: "cloud-standin/build.sh", output: "cloud-standin"),
    ]

    /// The kmatrix initramfs rootfs every kernel guest boots with.
    public static let rootfs = "kernel-rootfs/build.sh"

    /// A user's consumer as a self-contained bundle (docs/architecture.md, "Consumers").
    public static let consumer = "consumer/build.sh"

    public static func named(_ name: String, kind: RecipeDefinition.Kind) -> RecipeDefinition? {
        all.first { $0.name == name && $0.kind == kind }
    }

    public static func names(_ kind: RecipeDefinition.Kind) -> [String] {
        all.filter { $0.kind == kind }.map(\.name)
    }
}
