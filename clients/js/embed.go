// Package js embeds Troupe's JavaScript client (troupe.js), a dependency-free
// ES module, so that a Go server can serve it to its pages:
//
//	mux.Handle("GET /troupe.js", http.FileServerFS(js.FS))
package js

import "embed"

// FS holds troupe.js at its root.
//
//go:embed troupe.js
var FS embed.FS
