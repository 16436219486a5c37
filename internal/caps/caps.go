// Package caps names Linux capabilities and applies an OCI capability set
// (bounding, effective, permitted, inheritable, ambient) to the calling thread.
package caps
