package main

import (
	"go/build"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageRules keeps the house rules of the design: tiny imports
// nothing of this module; infer and finetune may import tiny; capture and
// publish import neither tiny nor finetune; only agent ties the packages
// together (and only cmd imports agent); tiny, finetune and the GPU
// packages build without OpenCV (GPU test binaries run where it is absent).
func TestPackageRules(t *testing.T) {
	const module = "github.com/yolo7d/yolo7d/"
	allowed := map[string][]string{
		"tiny":        {},
		"finetune":    {"tiny"},
		"infer":       {"tiny", "infer/cudnn", "infer/trt"},
		"infer/cudnn": {"tiny"},
		"infer/trt":   {"tiny"},
		"capture":     {},
		"publish":     {},
		"systemd":     {},
		"agent":       {"capture", "infer", "publish", "systemd", "finetune", "tiny"},
	}
	noOpenCV := map[string]bool{"tiny": true, "finetune": true, "infer/cudnn": true, "infer/trt": true}
	for pkg, ok := range allowed {
		p, err := build.ImportDir(filepath.Join("..", "..", pkg), 0)
		if err != nil {
			t.Fatalf("%s: %v", pkg, err)
		}
		for _, imp := range p.Imports {
			if noOpenCV[pkg] && strings.HasPrefix(imp, "gocv.io/") {
				t.Errorf("%s imports %s: it must build without OpenCV", pkg, imp)
			}
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			if dep == "agent" {
				t.Errorf("%s imports agent: only cmd may", pkg)
			}
			good := false
			for _, a := range ok {
				if dep == a || strings.HasPrefix(dep, a+"/") {
					good = true
				}
			}
			if !good {
				t.Errorf("%s imports %s, which the design does not allow (allowed: %v)", pkg, dep, ok)
			}
		}
	}
}
