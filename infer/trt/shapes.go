package trt

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/yolo7d/yolo7d/tiny"
)

// numAnchors and levelStrides describe YOLOv7-tiny's IDetect head: three
// anchors per cell at strides 8, 16 and 32 (p3, p4, p5).
const numAnchors = 3

var levelStrides = [3]int{8, 16, 32}

// checkIO checks the engine's tensors against the model contract: input
// 1x3xSxS with S a multiple of 32, and three raw head outputs
// 1x3xHxWx(5+nc), the same nc, with H = W = S/8, S/16, S/32 in that order
// (the shim orders outputs by size, largest first). It returns S.
func checkIO(input []int, outputs [][]int, names []string) (int, error) {
	if len(input) != 4 || input[0] != 1 || input[1] != 3 || input[2] != input[3] || input[2] <= 0 || input[2]%32 != 0 {
		return 0, fmt.Errorf("input has shape %s, want 1x3xSxS with S a multiple of 32", dimsString(input))
	}
	s := input[2]
	if len(outputs) == 1 && len(outputs[0]) == 3 {
		return 0, fmt.Errorf("output %q has shape %s: a decoded 1xNx(5+nc) output means a --grid export; export without --grid (raw outputs)", names[0], dimsString(outputs[0]))
	}
	if len(outputs) != len(levelStrides) {
		return 0, fmt.Errorf("want 3 raw outputs (p3, p4, p5), the engine has %d (%s)", len(outputs), strings.Join(names, ", "))
	}
	k := outputs[0]
	for i, d := range outputs {
		if len(d) != 5 || d[0] != 1 || d[1] != numAnchors || d[4] < 6 || d[4] != k[4] {
			return 0, fmt.Errorf("output %q has shape %s, want raw 1x3xHxWx(5+nc)", names[i], dimsString(d))
		}
		if g := s / levelStrides[i]; d[2] != g || d[3] != g {
			return 0, fmt.Errorf("output %q has grid %dx%d, want %dx%d (input %d / stride %d)", names[i], d[2], d[3], g, g, s, levelStrides[i])
		}
	}
	return s, nil
}

func dimsString(d []int) string {
	parts := make([]string, len(d))
	for i, v := range d {
		parts[i] = strconv.Itoa(v)
	}
	return strings.Join(parts, "x")
}

// libVersion formats getInferLibVersion(): M*1000+m*100+p up to 8.x
// (8502 = 8.5.2), M*10000+m*100+p from 10.0 (100300 = 10.3.0).
func libVersion(v int) string {
	if v >= 10000 {
		return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
	}
	return fmt.Sprintf("%d.%d.%d", v/1000, v/100%10, v%100)
}

func volume(d []int) int {
	n := 1
	for _, v := range d {
		n *= v
	}
	return n
}

// precheckONNX checks the ONNX graph's declared input and outputs against
// the model contract (checkIO) before a build that takes minutes, so that
// e.g. a --grid export fails at once. Graphs it cannot read, or whose
// shapes are not all static, are left to TensorRT (nil): the engine's own
// shapes are checked after the build anyway.
func precheckONNX(b []byte) error {
	g, err := tiny.ParseONNXStructure(b)
	if err != nil {
		return nil
	}
	static := func(d []int64) ([]int, bool) {
		s := make([]int, len(d))
		for i, v := range d {
			if v <= 0 {
				return nil, false
			}
			s[i] = int(v)
		}
		return s, d != nil
	}
	var in []int
	n := 0
	for _, v := range g.Inputs {
		if _, ok := g.Initializer(v.Name); ok {
			continue // IR < 4 lists the weights as inputs
		}
		n++
		var ok bool
		if in, ok = static(v.Dims); !ok {
			return nil
		}
	}
	if n != 1 {
		return fmt.Errorf("the ONNX graph has %d inputs, want 1 (1x3xSxS)", n)
	}
	outs := make([][]int, len(g.Outputs))
	names := make([]string, len(g.Outputs))
	for i, v := range g.Outputs {
		var ok bool
		if outs[i], ok = static(v.Dims); !ok {
			return nil
		}
		names[i] = v.Name
	}
	// The engine orders its outputs by size, largest first: do the same.
	idx := make([]int, len(outs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return volume(outs[idx[a]]) > volume(outs[idx[b]]) })
	so, sn := make([][]int, len(idx)), make([]string, len(idx))
	for i, j := range idx {
		so[i], sn[i] = outs[j], names[j]
	}
	if _, err := checkIO(in, so, sn); err != nil {
		return fmt.Errorf("the ONNX graph: %w", err)
	}
	return nil
}
