package specs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
)

// Hash is a short, stable hash of v's JSON encoding (map keys are sorted by encoding/json):
// 10 hex characters, enough to tell revisions apart and short enough for a label value.
func Hash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value hashed here is a plain Kubernetes struct; JSON never fails on them.
		panic("specs: hash: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:10]
}

// stamp sets the spec-hash annotation over the object's labels, other annotations and body.
func stamp(labels, annotations map[string]string, body any) map[string]string {
	a := maps.Clone(annotations)
	if a == nil {
		a = map[string]string{}
	}
	delete(a, AnnotationSpecHash)
	a[AnnotationSpecHash] = Hash(struct {
		L map[string]string `json:"l"`
		A map[string]string `json:"a"`
		B any               `json:"b"`
	}{labels, a, body})
	return a
}
