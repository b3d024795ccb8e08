package trt

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The plan cache. A TensorRT plan is valid only for the TensorRT version
// and the GPU it was built on (TensorRT's support policy), so a plan file
// is named by a key over everything that changes it: the ONNX bytes, the
// TensorRT library and header versions, the GPU's name and compute
// capability, the precision and, for INT8, the calibration set. A plan
// that fails to deserialize anyway is rebuilt and overwritten (trt.go).

// planKey is what a plan depends on.
type planKey struct {
	ONNX         [32]byte // SHA-256 of the ONNX file
	Library      int      // getInferLibVersion() of the loaded libnvinfer
	Headers      string   // the headers the shim was compiled against, "8.5.2.2"
	GPU          string   // cudaDeviceProp.name
	Major, Minor int      // compute capability
	Precision    Precision
	Calib        []calibFile // INT8 only
}

// sum is the hex SHA-256 naming the plan.
func (k planKey) sum() string {
	h := sha256.New()
	fmt.Fprintf(h, "yolo7d tensorrt plan v1\nonnx %x\ntensorrt %d %s\ngpu %q sm_%d%d\nprecision %s\n",
		k.ONNX, k.Library, k.Headers, k.GPU, k.Major, k.Minor, k.Precision)
	writeCalib(h, k.Calib)
	return hex.EncodeToString(h.Sum(nil))
}

// calibSum names the INT8 calibration cache: the network, the TensorRT
// version and the calibration set, not the GPU (the scales carry over).
func (k planKey) calibSum() string {
	h := sha256.New()
	fmt.Fprintf(h, "yolo7d tensorrt calibration v1\nonnx %x\ntensorrt %d %s\n", k.ONNX, k.Library, k.Headers)
	writeCalib(h, k.Calib)
	return hex.EncodeToString(h.Sum(nil))
}

func writeCalib(w io.Writer, files []calibFile) {
	for _, f := range files {
		fmt.Fprintf(w, "calib %q %d\n", f.Name, f.Size)
	}
}

// cachePaths returns the plan file and, for INT8, the calibration cache
// in dir: <onnx stem>.<precision>.<key>.plan and <stem>.int8.<key>.calib.
func (k planKey) cachePaths(dir, onnx string) (plan, calib string) {
	stem := strings.TrimSuffix(filepath.Base(onnx), filepath.Ext(onnx))
	plan = filepath.Join(dir, fmt.Sprintf("%s.%s.%s.plan", stem, k.Precision, k.sum()))
	if k.Precision == INT8 {
		calib = filepath.Join(dir, fmt.Sprintf("%s.int8.%s.calib", stem, k.calibSum()))
	}
	return plan, calib
}

// cacheDir resolves Options.CacheDir (see there) and creates it.
func cacheDir(opts Options) (string, error) {
	dir := opts.CacheDir
	if dir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(d, "yolo7d", "tensorrt")
		} else {
			dir = filepath.Dir(opts.ONNX)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("plan cache: %w", err)
	}
	return dir, nil
}

// writeFileAtomic writes data to a temporary file in path's directory,
// syncs it and renames it over path, so a reader (or a crash) never sees a
// partial plan.
func writeFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// calibFile is one INT8 calibration tensor.
type calibFile struct {
	Path string
	Name string
	Size int64
}

// listCalib returns the *.bin files of dir in name order. Each must be a
// non-empty whole number of float32 values, all of the same size (the shim
// checks that size against the network input when it builds).
func listCalib(dir string) ([]calibFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("calibration tensors: %w", err)
	}
	var files []calibFile
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".bin") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("calibration tensors: %w", err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		if st.Size() == 0 || st.Size()%4 != 0 {
			return nil, fmt.Errorf("calibration tensor %s: %d bytes is not a whole number of float32 values", p, st.Size())
		}
		if len(files) > 0 && st.Size() != files[0].Size {
			return nil, fmt.Errorf("calibration tensor %s: %d bytes, but %s has %d", p, st.Size(), files[0].Name, files[0].Size)
		}
		files = append(files, calibFile{Path: p, Name: e.Name(), Size: st.Size()})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("calibration tensors: no *.bin files in %s", dir)
	}
	return files, nil // os.ReadDir sorts by name
}
