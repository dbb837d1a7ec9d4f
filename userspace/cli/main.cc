// vigil: the command-line tool for performance investigations on one host. Everything lives in
// the vigil_cli library (userspace/cli/cli.cc dispatches the subcommands).
#include "userspace/cli/cli.h"

int main(int argc, char** argv) { return vigil::cli::runCli(argc, argv); }
