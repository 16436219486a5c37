// Package units writes sizes as Docker's command line does, for what
// berth and berth-registry print (image ls, stats, pull's and push's
// progress).
package units

import "fmt"

// HumanSize is n bytes in decimal units to three figures: 512B, 1.5kB,
// 108MB.
func HumanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, suffix := float64(n), "kMGT"
	i := -1
	for v >= unit && i < len(suffix)-1 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.3g%cB", v, suffix[i])
}
