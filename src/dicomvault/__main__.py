from dicomvault.cli import main

main()
