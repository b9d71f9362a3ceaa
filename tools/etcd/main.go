// Wrapper main for etcd: go.etcd.io/etcd/server/v3 carries replace directives in its go.mod,
// so `go install go.etcd.io/etcd/server/v3@version` refuses to build it. Importing etcdmain
// from a module of ours builds the same server binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
