package main

// GET /openapi.json: the OpenAPI 2.0 (Swagger) document of this API. Its
// paths and types are generated at build time from control.proto's HTTP
// annotations by protoc-gen-swagger (build.sh); openapi_extra.json adds the
// routes this program serves itself (Centrifugo's command and batch forms,
// probes, this document, the operator listener's pages), the API-key
// security scheme and the error shape. Nothing of the generated part is
// written by hand.

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"google.golang.org/grpc/codes"
)

//go:embed openapi.generated.json
var openapiGenerated []byte

//go:embed openapi_extra.json
var openapiExtra []byte

// buildOpenAPI merges the two; a path or definition in both is a build
// mistake, reported rather than silently overwritten.
func buildOpenAPI(version string) ([]byte, error) {
	var doc, extra map[string]interface{}
	if err := json.Unmarshal(openapiGenerated, &doc); err != nil {
		return nil, fmt.Errorf("generated document: %v", err)
	}
	if err := json.Unmarshal(openapiExtra, &extra); err != nil {
		return nil, fmt.Errorf("openapi_extra.json: %v", err)
	}
	// Every generated operation can fail with the error shape.
	paths, _ := doc["paths"].(map[string]interface{})
	keys := make([]string, 0, len(paths))
	for k := range paths {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, p := range keys {
		ops, _ := paths[p].(map[string]interface{})
		for _, op := range ops {
			o, _ := op.(map[string]interface{})
			responses, _ := o["responses"].(map[string]interface{})
			if responses == nil {
				continue
			}
			if _, ok := responses["default"]; !ok && !isCentrifugoPath(p) {
				responses["default"] = map[string]interface{}{
					"description": "an error (gRPC status as HTTP status: 400, 401, 404, 503, ...)",
					"schema":      map[string]interface{}{"$ref": "#/definitions/switchboardError"},
				}
			}
		}
	}
	info, _ := extra["info"].(map[string]interface{})
	info["version"] = version
	doc["info"] = info
	doc["securityDefinitions"] = extra["securityDefinitions"]
	doc["security"] = extra["security"]
	for _, section := range []string{"paths", "definitions"} {
		into, _ := doc[section].(map[string]interface{})
		if into == nil {
			into = map[string]interface{}{}
			doc[section] = into
		}
		from, _ := extra[section].(map[string]interface{})
		for k, v := range from {
			if _, dup := into[k]; dup {
				return nil, fmt.Errorf("openapi_extra.json: %s %q is generated already", section, k)
			}
			into[k] = v
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}

func openapiHandler(doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, codes.Unimplemented, "use GET")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(doc)
	}
}
