import Foundation
import KMatrixCommands

// The executable only hands the process's arguments and environment to the command library.
exit(await KMatrixCLI.main(Array(CommandLine.arguments.dropFirst()), context: .system()))
