/*
 * Breachbook training rules.
 *
 * They detect the inert sample files of `breachbook scenario generate`
 * (forensics.scenario): PE stubs whose only code is `xor eax, eax; ret` and
 * which carry a marker string. They are not malware and these rules say
 * nothing about real threats. The EICAR rule finds the standard anti-virus
 * test file (68 bytes, MD5 44d88612fea8a8f36de82e1278abb02f).
 */

rule Breachbook_Training_Dropper
{
    meta:
        description = "Breachbook training scenario: the phishing dropper (inert PE stub)"
        author = "Breachbook"
        reference = "forensics/scenario/artifacts.py"
        severity = "training"
    strings:
        $marker = "BREACHBOOK-TRAINING-DROPPER" ascii
    condition:
        uint16(0) == 0x5A4D and $marker
}

rule Breachbook_Training_Implant
{
    meta:
        description = "Breachbook training scenario: the service binary pushed by PsExec-style lateral movement (inert PE stub)"
        author = "Breachbook"
        reference = "forensics/scenario/artifacts.py"
        severity = "training"
    strings:
        $marker = "BREACHBOOK-TRAINING-IMPLANT" ascii
    condition:
        uint16(0) == 0x5A4D and $marker
}

rule EICAR_Test_File
{
    meta:
        description = "EICAR anti-virus test file"
        reference = "https://www.eicar.org/download-anti-malware-testfile/"
    strings:
        // X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*, as hex so that
        // this rule file itself is not mistaken for the test file.
        $eicar = { 58 35 4F 21 50 25 40 41 50 5B 34 5C 50 5A 58 35 34 28 50 5E 29 37 43 43 29 37 7D
                   24 45 49 43 41 52 2D 53 54 41 4E 44 41 52 44 2D 41 4E 54 49 56 49 52 55 53 2D
                   54 45 53 54 2D 46 49 4C 45 21 24 48 2B 48 2A }
    condition:
        $eicar at 0 and filesize < 128
}
