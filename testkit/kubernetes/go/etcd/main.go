// Command etcd is etcd's own server main, built from go.etcd.io/etcd/server/v3 at the version pinned in
// ../go.mod (etcd's module has local replaces too, so it cannot be go-installed as it is).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
