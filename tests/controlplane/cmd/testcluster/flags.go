package main

import (
	"github.com/spf13/pflag"
)

// flagSet merges a component's named flag sets into one, so that the
// component can be configured with exactly the command-line flags its
// documentation describes (and --apiserver-arg can pass any of them).
func flagSet(name string, sets map[string]*pflag.FlagSet) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	for _, s := range sets {
		fs.AddFlagSet(s)
	}
	return fs
}
