// Package atomicfile replaces small files whole: records, reference
// lists, pid files. A reader sees the old content or the new, never a mix
// or an empty file, whenever the writer dies.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data (mode perm): written to a temporary file
// in the same directory, then renamed over path. Concurrent writers each
// use their own temporary file; the last rename wins. On failure path is
// untouched and the temporary file removed.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

// WriteDurable is Write that also survives a power loss once it returns:
// the file is synced before the rename and its directory after.
func WriteDurable(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// TempPattern is the os.CreateTemp pattern of the temporary files Write
// leaves beside path should the writer be killed mid-write; a store that
// sweeps its files may remove what matches it when no writer runs.
func TempPattern(path string) string {
	return "." + filepath.Base(path) + ".tmp-*"
}

func write(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, TempPattern(path))
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil && perm != 0o600 { // os.CreateTemp's mode
		err = f.Chmod(perm)
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if durable {
		return SyncDir(dir)
	}
	return nil
}

// SyncDir makes the entries of dir (files created, renamed or removed
// there) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
