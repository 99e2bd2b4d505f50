from statechannel.cli import main

main()
