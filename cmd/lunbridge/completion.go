package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// Shell completion: the scripts ask the binary itself for candidates
// (urfave/cli's --generate-bash-completion), so they follow new commands
// and flags without being regenerated.

const bashCompletion = `# bash completion for lunbridge; load with:
#   source <(lunbridge completion bash)
# or install: lunbridge completion bash > /etc/bash_completion.d/lunbridge
_lunbridge_complete() {
	local cur opts
	COMPREPLY=()
	cur="${COMP_WORDS[COMP_CWORD]}"
	if [[ "$cur" == "-"* ]]; then
		opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
	else
		opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
	fi
	COMPREPLY=($(compgen -W "$opts" -- "$cur"))
	return 0
}
complete -o bashdefault -o default -F _lunbridge_complete lunbridge
`

const zshCompletion = `#compdef lunbridge
# zsh completion for lunbridge; load with:
#   source <(lunbridge completion zsh)
# or install as _lunbridge in a directory of $fpath.
_lunbridge() {
	local -a opts
	local cur
	cur=${words[-1]}
	if [[ "$cur" == "-"* ]]; then
		opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" --generate-bash-completion 2>/dev/null)}")
	else
		opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
	fi
	if [[ "${opts[1]}" != "" ]]; then
		_describe 'values' opts
	else
		_files
	fi
}
if [[ "$(basename -- ${(%):-%x})" != "_lunbridge" ]]; then
	compdef _lunbridge lunbridge
fi
`

func init() {
	register("", &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		UsageText: "lunbridge completion bash|zsh|fish",
		Description: `Prints a script that completes lunbridge's commands and flags; the script
asks lunbridge itself, so it stays right after upgrades. The fish script is
generated from the command definitions (commands and flags of this version).

Examples:
   source <(lunbridge completion bash)                        # this shell only
   lunbridge completion bash > /etc/bash_completion.d/lunbridge
   lunbridge completion zsh > "${fpath[1]}/_lunbridge"
   lunbridge completion fish > ~/.config/fish/completions/lunbridge.fish`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageErrorf("completion takes one shell name: bash, zsh or fish")
			}
			switch c.Args().First() {
			case "bash":
				io.WriteString(c.App.Writer, bashCompletion)
			case "zsh":
				io.WriteString(c.App.Writer, zshCompletion)
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("completion fish: %w", err)
				}
				io.WriteString(c.App.Writer, s)
			default:
				return usageErrorf("completion: %q is not bash, zsh or fish", c.Args().First())
			}
			return nil
		},
	})
}
