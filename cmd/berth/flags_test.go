package main

import (
	"reflect"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	fs := newFlags("t")
	name := fs.String("name", "", "")
	force := fs.Bool("f", false, "")
	if err := parse(fs, []string{"a", "--name", "x", "b", "-f", "--", "-c"}); err != nil {
		t.Fatal(err)
	}
	if *name != "x" || !*force || !reflect.DeepEqual(fs.Args(), []string{"a", "b", "-c"}) {
		t.Fatalf("name %q force %v args %q", *name, *force, fs.Args())
	}
}

func TestParseStrictGroups(t *testing.T) {
	fs := newFlags("t")
	i := fs.Bool("i", false, "")
	tt := fs.Bool("t", false, "")
	var env listFlag
	fs.Var(&env, "e", "")
	if err := parseStrict(fs, []string{"-it", "-e", "A=1", "--e=B=2", "img", "sh", "-c", "x"}); err != nil {
		t.Fatal(err)
	}
	if !*i || !*tt || !reflect.DeepEqual([]string(env), []string{"A=1", "B=2"}) || !reflect.DeepEqual(fs.Args(), []string{"img", "sh", "-c", "x"}) {
		t.Fatalf("i %v t %v env %q args %q", *i, *tt, env, fs.Args())
	}
	if err := parseStrict(newFlags("u"), []string{"-zz"}); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
}
