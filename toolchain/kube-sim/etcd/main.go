// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the
// pinned release (upstream's own etcd main lives in a module of its own that
// is not published; etcdmain is what it calls).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
