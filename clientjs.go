package troupe

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed clients/js/troupe.js
var clientFiles embed.FS

// ClientJS returns a handler that serves troupe.js, Troupe's dependency-free
// JavaScript client (an ES module), so that a page served by the same Go
// program can import it with the server it talks to:
//
//	mux.Handle("GET /troupe.js", troupe.ClientJS())
//
// It serves the file at any path that ends in /troupe.js.
func ClientJS() http.Handler {
	sub, err := fs.Sub(clientFiles, "clients/js")
	if err != nil {
		panic(err) // the embedded directory is there: a build without it does not compile
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/troupe.js"
		files.ServeHTTP(w, r2)
	})
}
