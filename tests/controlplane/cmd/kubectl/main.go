// Command kubectl is the stock kubectl, built from the k8s.io/kubectl library
// at the version pinned in go.mod so that tests never depend on whatever
// kubectl happens to be installed on the machine.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// RunNoErrOutput leaves error printing to CheckErr, which formats API
	// errors the way kubectl users expect and sets the exit code.
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		cmdutil.CheckErr(err)
	}
}
